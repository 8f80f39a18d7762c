"""Knowledge graphs for ERNIE (THU): the release file formats, TransE, knowledge sources and entity-aligned data."""
