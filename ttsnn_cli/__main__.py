from ttsnn_cli.cli import main

main()
