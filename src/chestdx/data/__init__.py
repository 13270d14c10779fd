"""Datasets: readers into one Index table, patient-grouped splits, the pixel cache, torch Datasets, EDA."""
