from mlp_lab.cli import main

main()
