"""The terminal's side of the kiosk (`selfpay kiosk-agent`): its configuration file, its
probes (system, sensor plug-ins, the UPS through NUT, the ESC/POS printer), its client of
the server's device API, and the agent that ties them together.

Nothing here runs on the server: these modules are imported only by the kiosk-agent
command and its tests.
"""
