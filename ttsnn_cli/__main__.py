from ttsnn_cli.cli.entry import main

main()
