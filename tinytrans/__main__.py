from tinytrans.cli import main

raise SystemExit(main())
