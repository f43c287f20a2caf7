from trunkserve.export.cli import main

raise SystemExit(main())
