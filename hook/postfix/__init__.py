"""Postfix: reading an instance's configuration and controlling it.

``instance``: ``postconf`` queries, ``postfix check/reload``; ``tls_files``: which
certificate files Postfix reads, for which services and SNI names.
"""
