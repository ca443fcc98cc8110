"""Certificates and certbot lineages: parsing, pairing, chain validation, key
permissions and the OS trust anchors.
"""
