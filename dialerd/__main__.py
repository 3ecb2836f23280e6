from dialerd.cli import main

raise SystemExit(main())
