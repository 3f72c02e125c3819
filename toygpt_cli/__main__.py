from toygpt_cli.cli.entry import main

main()
