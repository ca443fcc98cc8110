"""Plan: what the real run writes, chmods, rebuilds, reloads, proves and imports, in
order. It is what ``--dry-run`` prints (``would: ...``); nothing is changed here."""

from __future__ import annotations

from hook.certs import perms
from hook.certs.bundle import Bundle
from hook.certs.trust import AnchorPlan
from hook.config import Config
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.prove import sni_names
from hook.pipeline.validate import Validation, group_id


def plan(config: Config, found: Discovery, new: Bundle, checked: Validation,
         anchors: AnchorPlan | None) -> tuple[str, ...]:
    gid = group_id(config)
    mode = perms.key_mode(gid)
    use = found.use
    group = config.deploy.group if gid is not None else None
    steps = [messages.fix_step(f) for f in checked.fixes]
    steps.extend(messages.write_step(s, new, mode, group) for s in use.staged)
    steps.extend(messages.postmap_step(m) for m in use.sni_maps)
    if config.postfix.reload_command:
        steps.append(messages.reload_step(config.postfix.reload_command))
    else:
        steps.extend(messages.reload_step(["postfix", "-c", str(p.config_directory), "reload"])
                     for p, _ in found.instances)
    steps.extend(messages.prove_step(s, new.leaf_sha256) for s in use.services)
    steps.extend(messages.prove_sni_step(n, new.leaf_sha256) for n in sni_names(use))
    if anchors is not None:
        steps.append(messages.anchors_step(anchors))
    return tuple(steps)
