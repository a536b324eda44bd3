from frosted.cli import main

main()
