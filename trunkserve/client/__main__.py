from trunkserve.client.cli import main

raise SystemExit(main())
