"""Exchange ActiveSync, WBXML and Autodiscover."""
