from toygpt_cli.cli.app import main

main()
