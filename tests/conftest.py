import sys
from pathlib import Path

# Make tests/fixtures_*.py importable from every test module.
sys.path.insert(0, str(Path(__file__).parent))
