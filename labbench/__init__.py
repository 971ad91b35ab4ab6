"""The lab bench: the lab's experiments and instruments, kept apart from the answer key in source/."""
