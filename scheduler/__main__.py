"""``python -m scheduler ...``: what ``plankton scheduler`` runs."""

import argparse
import sys

from scheduler.main import main

parser = argparse.ArgumentParser(prog="plankton scheduler")
parser.add_argument("--url")
parser.add_argument("--import", dest="imports", action="append", default=[])
parser.add_argument("--name")
parser.add_argument("--log-level", default="INFO")
args = parser.parse_args()
sys.exit(main(args.url, tuple(args.imports), args.name, args.log_level))
