"""Card core: crypto and key vault, VUID and QR codec, code verification, card accounts,
EMPI, personal-data protection and storage. Usable from any script or worker; it never
imports the web framework."""
