"""The categories the allowlist gives op types: what an op may do when TF Serving runs it.

The bottom of the safety package: the rules (op_classes.py), the generated table
(op_table.py), the libraries TF Serving links (libraries.py) and the lookup
(allowlist.py) all name these; this module imports nothing.
"""

COMPUTE = "compute"
# Checked where they run (see safety/scan.py): allowed on the loader's own paths only.
RESTORE = "restores a checkpoint"
TABLE_FROM_FILE = "fills a table from a file"
FILE_ATTRIBUTE = "opens a file when an attribute names one"
CHECKED = frozenset({RESTORE, TABLE_FROM_FILE, FILE_ATTRIBUTE})
# Refused unless allowed by name.
FILES = "reads or writes files"
PYTHON = "runs Python"
NETWORK = "opens the network"
DEVICES = "talks to other devices or hosts (TPU, XLA, collectives, send/recv)"
OUTSIDE_STATE = "reaches state outside the model (session handles, iterators by name)"
HIDDEN_GRAPH = "runs a graph carried as a serialized string, which the scan cannot see into"
LOG = "writes to the server's log"
PROCESS = "ends the server's process"
TEST_ONLY = "exists only for TensorFlow's own tests"
UNREVIEWED = "not known to compute only (a stateful op nobody reviewed)"
NOT_LINKED = ("registered by a library TF Serving links, but not by the version TF Serving's "
              "model server links: TF Serving cannot run it")
UNKNOWN = "not a TensorFlow op this version of servopt knows (a custom op?)"
