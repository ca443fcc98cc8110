"""The TLS probe and its verdicts: a careful SMTP client, STARTTLS / implicit TLS
probes, and the judgement of what was served.
"""
