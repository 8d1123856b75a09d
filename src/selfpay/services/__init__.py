"""Use cases. Import only the domain and the ports (Protocols) defined here."""
