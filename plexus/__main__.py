from plexus.cli import entry

entry()
