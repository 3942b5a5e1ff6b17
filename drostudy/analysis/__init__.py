"""Analysis of the study's results: paired comparisons over seeds, multiplicity and power."""
