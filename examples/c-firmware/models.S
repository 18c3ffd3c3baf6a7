/* The models, linked into flash as they are on disk; goldcrest reads them in place.
 * 16-byte alignment keeps every tensor naturally aligned (the writer aligns within the file). */
    .section .rodata.models, "a"

    .balign 16
    .globl toto_model
toto_model:
    .incbin TOTO_MODEL_PATH
toto_model_end:

    .balign 16
    .globl rwkv_model
rwkv_model:
    .incbin RWKV_MODEL_PATH
rwkv_model_end:

    .balign 16
    .globl decoder_model
decoder_model:
    .incbin DECODER_MODEL_PATH
decoder_model_end:

    .balign 4
    .globl toto_model_len
toto_model_len:
    .word toto_model_end - toto_model
    .globl rwkv_model_len
rwkv_model_len:
    .word rwkv_model_end - rwkv_model
    .globl decoder_model_len
decoder_model_len:
    .word decoder_model_end - decoder_model
