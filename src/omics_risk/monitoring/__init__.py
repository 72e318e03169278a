"""Monitoring from serial samples: alert rules over ctDNA draws, their states and operating characteristics."""
