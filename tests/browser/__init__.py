"""Dashboard tests: its server side, and the pages in headless Chromium."""
