"""Alert outputs SOC teams plug in: PagerDuty, Slack, Microsoft Teams, syslog CEF, Splunk HEC.

Each is a pure builder (findings as published on the alerts topic → requests or frames) plus
a thin sender (one request → ok / retry / failed); :mod:`pipeline.outputs.runner` reads the
alerts topic, retries, and commits only what every output took. docs/OUTPUTS.md says how to
configure each.
"""
