import sys

from thermvision_db.cli import main

sys.exit(main())
