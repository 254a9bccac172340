"""Review a label or predict output: its rows by doubt (table), every decision kept in a log
beside it (log), and the corrections fed back as a file, a support set or re-sorted files
(export). Nothing here loads a model."""
