"""Floor 3, running a model on images: the runtimes behind one protocol and their registry
(runtimes), the one parity rule (parity), the one timing loop (timing), a model on photos of
any size (segmenter), predict.py's inputs and outputs (photos) and evaluate.py's runs of a
model over a split (scoring)."""
