"""Does protection work? `protocol.run_evaluation` is `lowkey eval` (the LowKey paper's
identification protocol, measured); around it: `datasets` (labelled photo folders), `uploads` (what
social sites do to photos), `cache` (protected photos on disk), `observers` (recognizers as a face
search sees them), `real_dlib` (the black box), `metrics` (rank-k, ROC AUC), `report` (JSON,
Markdown, plots, contact sheets), `side_by_side` (pictures a person judges), `lpips_metric`, and
`cli` (the arguments of `lowkey eval`).

May import everything in the engine except the command line; nothing else imports it.
"""
