"""postfix-certwatch front ends: ``renew-check`` and ``renew-daemon``.

Builds on :mod:`hook` (certificates, Postfix, the probe, the deploy pipeline); the
dependency is one-way.
"""
