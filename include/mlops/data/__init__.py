"""Data in: landing, the processed-file ledger, reading and checking files, validation, quarantine and the published datasets."""
