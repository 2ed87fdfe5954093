"""Floor 1, importing nothing of the project: the Cityscapes label table (labels) and the
`--classes` names (class_options), file I/O (io: atomic writes, PNG decoding), command-line
plumbing (cli; errors: BadInput, the user's mistake), progress displays (progress), the resizing
of scored predictions (resize), pictures of predictions (visualize) and this machine's facts
(machine)."""
