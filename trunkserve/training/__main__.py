from trunkserve.training.cli import main

raise SystemExit(main())
