"""Experiments and instruments that measure the lab (not read by learners): the bench side."""
