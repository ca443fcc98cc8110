"""postfix-certwatch: the certbot deploy hook and the certificate/Postfix library.

``hook`` holds everything that knows about certificates and Postfix (configuration,
bundle parsing, atomic install, Postfix discovery and control, the STARTTLS probe and
the deploy pipeline). ``daemon`` builds on it; ``hook`` never imports ``daemon``.
"""

__version__ = "0.1.0"
