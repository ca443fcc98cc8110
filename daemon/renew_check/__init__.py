"""``renew-check``: the manual check, and the modules only it uses (survey, audit,
rendering, DNS status, MX and MTA-STS coverage, adopt).
"""
