"""What the section pages draw from a result: one module per section, so that pages keep to prose
and layout."""
