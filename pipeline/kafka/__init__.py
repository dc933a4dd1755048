"""Kafka plumbing: broker lifecycle, topic administration, fast producers and consumers."""
