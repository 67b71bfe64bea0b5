from framecull.cli import main

raise SystemExit(main())
