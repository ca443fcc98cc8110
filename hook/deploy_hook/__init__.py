"""``postfix-deploy-hook``: the certbot deploy hook's front end (arguments, exit codes).

certbot runs it from ``renewal-hooks/deploy/``; the work is :mod:`hook.pipeline`.
"""
