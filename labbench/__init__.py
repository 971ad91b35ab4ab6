"""The lab's bench: experiments, instruments and server-side guards around `source`, used by ui.py and the pages."""
