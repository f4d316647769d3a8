from aicenter_deviceplugin.main import main

raise SystemExit(main())
