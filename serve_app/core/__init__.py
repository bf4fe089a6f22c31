"""What every stage speaks: settings, errors, bounds, metrics, and the transcript and result
types with their renderings (txt, srt, vtt, tsv). Imports nothing else of the service."""
