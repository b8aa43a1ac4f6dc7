from lxcforge.cli import main

main()
