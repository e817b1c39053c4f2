"""Where events go besides metrics: OpenTelemetry spans and the NDJSON flight recorder."""
