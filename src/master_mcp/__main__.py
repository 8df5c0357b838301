import sys

from master_mcp.cli import main

sys.exit(main())
