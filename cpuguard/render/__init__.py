"""Renderers: turn verdicts into text, JSON, JUnit, Markdown, HTML. They never compute."""
