"""Exchange ActiveSync, WBXML and Autodiscover.

- `app`: the HTTPS front end (ASGI): routing, Basic login, the EAS request pipeline.
- `request`: the query (plain and base64 forms), version, policy key, credentials.
- `context`: what handlers get and return; the command table; the settings.
- `commands`: Provision, Settings, ValidateCert, ResolveRecipients, and `default_commands`.
- `provision`, `policy`, `devices`: provisioning rules, the policy model, partnerships.
- `replies`, `status`: status-only answers per command; the status code enums.
- `autodiscover`: POX and JSON Autodiscover, Thunderbird autoconfig, Apple profiles.
- `http`: responses, bounded bodies, gzip.
- `wbxml`: the WBXML codec (sans-IO).
"""
