from ssl_biases.cli import main

main()
