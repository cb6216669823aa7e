from ttsnn_cli.entry import main

main()
