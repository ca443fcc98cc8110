"""DNS: lookups that say how far their answer can be trusted (DNSSEC), and DANE for
SMTP (TLSA records, the deploy's DANE gate, where DANE was seen in use).
"""
