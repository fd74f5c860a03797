import sys

from thermvision_db.cli.main import main

sys.exit(main())
