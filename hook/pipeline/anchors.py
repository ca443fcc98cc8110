"""Trust anchors (opt-in, ``trust.import_anchors``): the chain's intermediates go into
the system trust store, planned before any change and imported only after a successful
proof. The certificate is deployed by then, so a failure here is a warning."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from hook.certs import trust
from hook.certs.lineage import Lineage
from hook.config import Config
from hook.pipeline import messages


def plan_anchors(config: Config, lineage: Lineage,
                 chain: Sequence[x509.Certificate]) -> trust.AnchorPlan | None:
    """What the import would add and remove; None unless ``trust.import_anchors``."""
    if not config.trust.import_anchors:
        return None
    return trust.plan(config.trust, config.deploy.state_dir, lineage.name, chain)


def import_anchors(config: Config, lineage: Lineage, plan: trust.AnchorPlan) -> tuple[str, ...]:
    """Import as planned; the warnings to report (none when it worked)."""
    try:
        result = trust.apply(plan, config.deploy.state_dir, lineage.name)
    except Exception as exc:  # e.g. OSError writing an anchor file
        return (messages.anchors_failed(messages.why(exc)),)
    return () if result.ok else (messages.anchors_failed(result.message),)
