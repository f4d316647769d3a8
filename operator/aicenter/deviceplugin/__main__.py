from aicenter.deviceplugin.main import main

raise SystemExit(main())
